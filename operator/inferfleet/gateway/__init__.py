"""The request path: `inferfleet gateway`, an OpenAI-compatible front with a queue, slots and retries."""
