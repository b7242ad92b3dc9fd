"""The pure part of the publisher: the model, the destination catalog, the rules, FQL and
filters, the compiler and bundles. No I/O (the catalog reads its packaged JSON once); nothing
here imports the store, the write path or the HTTP API."""
