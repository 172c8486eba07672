"""What the tests stand on: real redis-server processes, real fastctx servers, free ports."""
