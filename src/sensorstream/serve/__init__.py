"""What the writer's process serves to outside readers: the HTTP read API, the PostgreSQL
endpoint, the processes they run in, and the client that reads through them."""
