"""`python -m decoder serve`: a tuned profile behind an OpenAI-compatible HTTP endpoint (docs/serving.md).

The HTTP layer (`app`: FastAPI routes; `schema` and `policy`: what a request may say; `responses`: OpenAI bodies)
hands validated requests to the batching engine (`engine`: one decode thread on `generate(on_block=...)`;
`text`: block-by-block answer text; `codec`: the tokenizer), which decodes under the profile read last
(`live_profile`). `service` wires them, `server` runs them under uvicorn, `metrics` counts. Importing `decoder` does
not import this package, nor FastAPI, uvicorn or prometheus_client.
"""
