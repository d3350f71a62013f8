"""Contract servers: local stand-ins for systems that cannot run here, held to a named version."""
