"""One module per command or command group; each is imported only when used."""
