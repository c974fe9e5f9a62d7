"""The platform layer: what runs the core on a cluster or as local processes. The cluster bundle
(:mod:`.bundle`), distributed training as a Kubeflow Trainer TrainJob (:mod:`.trainjob`), the
InferenceService and its canary rollout (:mod:`.deploy`), the two model servers as supervised local
processes (:mod:`.local`), and the ``fusionrec deploy`` command group (:mod:`.cli`). The core's training,
registry and serving code never imports it; it imports them."""
