"""Stage-one index backends, one file each: FAISS (dense), CSR and Seismic (sparse)."""
