"""The server's scratch disk: full-disk faults in the project's words, and the sweeper of files left behind."""
