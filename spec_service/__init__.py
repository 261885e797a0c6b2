"""spec_service: RKME specifications as a gRPC service (lwdock.spec.v1.SpecService)."""
