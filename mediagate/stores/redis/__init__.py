"""The Redis backends of the stores (mediagate.stores): each holds its Lua scripts and opens
one `RedisDb` the same way, a shape they repeat on purpose."""
