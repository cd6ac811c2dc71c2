"""JSON Schemas of the request bodies, published in /openapi.json (the handlers read raw bodies and
check every field themselves; these schemas document the fields and drive the API fuzz test)."""

_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant"], "description": "system: a user turn"},
        "content": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
                    },
                },
            ]
        },
    },
}
_MESSAGES = {"type": "array", "minItems": 1, "items": _MESSAGE}
_SAMPLING = {
    "temperature": {"type": "number", "minimum": 0, "maximum": 100, "description": "below 1e-6: greedy"},
    "seed": {"type": "integer", "minimum": 0},
    "max_tokens": {"type": "integer", "minimum": 1},
}

GENERATE_BODY = {
    "type": "object",
    "properties": {"prompt": {"type": "string"}, "num_samples": {"type": "integer", "minimum": 1}, **_SAMPLING},
}
CHAT_BODY = {"type": "object", "required": ["messages"], "properties": {"messages": _MESSAGES, **_SAMPLING}}
CHAT_COMPLETIONS_BODY = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": _MESSAGES,
        "stream": {"type": "boolean"},
        "n": {"type": "integer", "minimum": 1},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        **_SAMPLING,
    },
}


def request_body(schema: dict) -> dict:
    """`openapi_extra` of a route whose body is a JSON object of this schema."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
