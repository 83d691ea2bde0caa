"""The MOU policy core: the MOUs as models, their compilation and evaluation, the field
treatments and the decisions they produce. Pure code: no Kafka, no I/O beyond reading
the policy folder (:mod:`broker.policy.loader`)."""
