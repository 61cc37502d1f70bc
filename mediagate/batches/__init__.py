"""The Files and Batch APIs: OpenAI's batch shape run by the gateway itself, line by line,
through the image and video use cases (the upstream has no batch API)."""
