"""reuse_service: sandboxed learnware runs (lwdock.reuse.v1.ReuseService + KServe v2)."""
