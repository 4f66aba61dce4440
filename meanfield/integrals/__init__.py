"""Gaussian and sphere expectations of an activation, one signature, three kinds of answer.

    second_moment(f, q)       = E[phi(sqrt(q) z)^2]
    cross_moment(f, q1, q2)   = I_phi[q1, q2] = E[phi(u) phi(v)],  Var u = Var v = q1, Cov(u, v) = q2

floats / numpy arrays give float64 by the fast path (:mod:`.numeric`, split at kinks), ``dps=n``
gives mpmath at n digits, sympy arguments give the closed form (:mod:`.closed_forms`) or an
unevaluated :class:`~meanfield.integrals.symbolic.GaussianExpectation`. :mod:`.sphere` holds the
batch-norm sphere law and the chi-square moments of a batch variance.
"""
