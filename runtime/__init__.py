"""Engine, streams, server, client and CLI of nvmstream."""
