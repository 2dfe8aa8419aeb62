"""Sans-I/O core of a Realtime session: config validation, conversation, VAD, responses."""
