"""OpenAPI post-processing: describe the envelope exactly as the renderer writes it."""

ENVELOPE_PREFIX = "/api/v1/"

META = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "next": {"type": "string", "format": "uri", "nullable": True},
    },
    "required": ["request_id", "timestamp"],
}

ERROR_ENVELOPE = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": True},
            },
            "required": ["code", "message", "details"],
        },
        "meta": {"$ref": "#/components/schemas/Meta"},
    },
    "required": ["success", "error", "meta"],
}

# Errors any operation may answer; endpoints document their own extra ones.
COMMON_ERRORS = {
    "400": "Invalid input (validation_error).",
    "401": "Missing, invalid or expired token (not_authenticated).",
    "404": "No such object, or not yours (not_found).",
    "405": "Wrong HTTP method (method_not_allowed).",
    "429": "Rate limited (throttled); see Retry-After.",
}


def wrap_in_envelope(result, generator, request, public):
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Meta"] = META
    components["ErrorEnvelope"] = ERROR_ENVELOPE
    for path, operations in result.get("paths", {}).items():
        if not path.startswith(ENVELOPE_PREFIX):
            continue
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status_code, response in list(responses.items()):
                content = response.get("content", {})
                if str(status_code).startswith("2"):
                    inner = content.get("application/json", {}).get("schema", {})
                    response["content"] = {"application/json": {"schema": _success(inner)}}
                else:
                    response["content"] = {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
                    }
            for status_code, description in COMMON_ERRORS.items():
                responses.setdefault(
                    status_code,
                    {
                        "description": description,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
                        },
                    },
                )
    return result


def _success(inner: dict) -> dict:
    return {
        "type": "object",
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "data": inner or {},
            "meta": {"$ref": "#/components/schemas/Meta"},
        },
        "required": ["success", "data", "meta"],
    }
