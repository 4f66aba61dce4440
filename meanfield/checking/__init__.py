"""Theory against sampled networks: the statistical tests (weighted trend in 1/M, Holm) and
``verify`` with its report."""
