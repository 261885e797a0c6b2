"""search_service: indexed learnware search (lwdock.search.v1.SearchService)."""
