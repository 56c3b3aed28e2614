"""The CLI commands, one module each: the top layer, over the daemon, the executor and the nodes."""
