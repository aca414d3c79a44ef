"""The inline core: classify -> buffer -> match/resample -> normalise -> infer -> emit. No sockets, Gadgetron or HDF5."""
