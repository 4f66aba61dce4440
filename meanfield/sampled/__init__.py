"""Real networks, drawn at width M: literal forward and backward passes (batch and layer norm
included), the exact dual Gram J J^T / T and its spectrum, sampling many seeds, gradient descent."""
