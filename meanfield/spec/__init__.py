"""What a network is: activations (sympy expressions with their derivatives and closed-form hooks),
the normalization layers, the :class:`~meanfield.spec.network.Network`, its one text grammar
(:mod:`~meanfield.spec.grammar`; its words live in :mod:`~meanfield.spec.terms`, below the Network
that reads its own arguments with them), and the symbols the theory is written in. Everything else
reads this spec; it reads nothing else."""
