"""`cir serve`: an HTTP API and a web page over one Pipeline (FastAPI on uvicorn; `pip install 'cir[serve]'`)."""
