"""One module per zoo model; each registers its ModelSpec at import (see models.registry)."""
