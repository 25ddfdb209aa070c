"""The location of an S3 state: bucket, key, and the optional region and endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import UsageError

S3_SCHEME = "s3://"
_EXAMPLE = "s3://team-state/prod/volplan.state.json"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str
    # None leaves the value to boto3's standard chain (AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, ~/.aws/config).
    region: str | None = None
    endpoint_url: str | None = None

    @property
    def url(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key}"


def is_s3_url(text: str) -> bool:
    return text.startswith(S3_SCHEME)


def parse_s3_url(text: str) -> S3Location:
    """Parse `s3://BUCKET/KEY`; raises UsageError naming the expected form."""
    bucket, _, key = text[len(S3_SCHEME) :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise UsageError(
            "Invalid S3 state URL",
            f"--state {text}: expected s3://BUCKET/KEY with the key of the state object, such as {_EXAMPLE}.",
        )
    return S3Location(bucket, key)
