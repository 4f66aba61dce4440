"""Finite width beyond the mean-field expectation: the four-point covariance engine of Gram
entries, the population spectrum of one output's gradient, and the random-matrix model of
lambda_max and s that ``predict(..., finite_width="rmt")`` reaches through the theory's registry."""
