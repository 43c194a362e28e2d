"""What every phase runs on: MPI behind one door (``parallel``), rank-0 progress (``report``), BLAS
threads, heap and page-cache management, and files written atomically."""
