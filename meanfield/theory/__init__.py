"""The large-width theory: the fold of layer rules into order parameters, signal propagation, and
the FIM statistics (``predict`` numerically, ``derive`` in sympy). Reads only the spec and the
integrals; finite-width models plug in through :func:`meanfield.theory.fisher.register_finite_width`."""
