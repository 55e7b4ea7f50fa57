"""`medlens serve`: a FastAPI inference service with a web viewer."""
