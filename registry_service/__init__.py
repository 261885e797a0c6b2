"""registry_service: the learnware registry (lwdock.registry.v1.RegistryService)."""
