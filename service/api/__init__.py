"""The HTTP layer: dependencies, middleware and one router per concern in `routes`."""
