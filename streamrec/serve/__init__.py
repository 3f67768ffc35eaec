"""The HTTP service: app, routes, the serving state, live set, filters, guards and monitoring."""
