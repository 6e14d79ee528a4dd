"""The HTTP face of the service: app factory, routes, CORS, body reading, operations and the server settings."""
