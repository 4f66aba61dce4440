"""Theory against sampled networks: the statistical tests (weighted trend in 1/M, Holm: ``trend``),
what is compared (``predictions``), ``verify`` (``verification``) with its report (``report``), the
random-matrix comparison records and figure (``comparison``), and the learning-rate grid: training
losses beside the predicted eta_max = 2/lambda_max (``learning_rate_grid``)."""
