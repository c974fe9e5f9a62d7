"""The request surface both model servers answer: the request and response schemas and their v1/v2
forms (:mod:`.schemas`), the OpenAPI documents (:mod:`.openapi`), callers' keys and what each may ask
(:mod:`.access`), the HTTP guards and error shape (:mod:`.http`), and the timeout and circuit breaker
around the feature store (:mod:`.resilience`). The KServe classes that use them are in ``serving/``."""
