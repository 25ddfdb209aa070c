"""Translate botocore exceptions into volplan's error types.

Every message names the volume (its id, or its address before it has one), the AWS error code
and what to do next. The provider wraps each AWS call in `aws_call`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

from engine.errors import ProviderError, VolumeNotFound

log = logging.getLogger(__name__)

# Codes that botocore's retry modes treat as throttling; they reach volplan only once every
# attempt has been throttled.
THROTTLING_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "EC2ThrottledException",
    }
)
EXPIRED_CREDENTIAL_CODES = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "AuthFailure", "InvalidClientTokenId"}
)
INVALID_REQUEST_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "InvalidParameter",
        "MissingParameter",
        "InvalidZone.NotFound",
        "InvalidAvailabilityZone",
        "VolumeLimitExceeded",
        "MaxIOPSLimitExceeded",
        "InvalidTagKey.Malformed",
        "TagLimitExceeded",
    }
)


@contextmanager
def aws_call(operation: str, subject: str, region: str) -> Iterator[None]:
    """Run one AWS call about `subject` (a volume id or address) and translate its errors."""
    try:
        yield
    except ClientError as error:
        raise translate_client_error(error, operation, subject, region) from error
    except BotoCoreError as error:
        raise translate_sdk_error(error, operation, subject, region) from error


def translate_client_error(error: ClientError, operation: str, subject: str, region: str) -> ProviderError:
    """Turn an error that AWS returned into a ProviderError with the code and the next step."""
    details = error.response.get("Error", {})
    code = str(details.get("Code", "Unknown"))
    message = str(details.get("Message", "")).rstrip(".")
    attempts = int(error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
    failed = f"{operation} for {subject} in {region} failed with {code}: {message}."
    log.debug("%s for %s in %s: AWS returned %s after %d attempts", operation, subject, region, code, attempts)

    if code == "InvalidVolume.NotFound":
        return VolumeNotFound("Volume not found", f"{failed} The volume does not exist in {region}.")
    if code == "VolumeInUse":
        return ProviderError(
            "Volume in use",
            f"{failed} Detach it from its instance first (its state must be available), then run apply again.",
        )
    if code == "IncorrectState":
        return ProviderError(
            "Volume in the wrong state",
            f"{failed} Wait until the volume is available (aws ec2 describe-volumes --region {region} "
            f"--volume-ids {subject}), then run apply again.",
        )
    if code == "IncorrectModificationState":
        return ProviderError(
            "Volume still being modified",
            f"{failed} An earlier modification of the volume is still modifying or optimizing. Wait until it "
            f"completes (aws ec2 describe-volumes-modifications --region {region} --volume-ids {subject}), "
            "then run apply again.",
        )
    if code == "VolumeModificationRateExceeded":
        return ProviderError(
            "Volume modified too often",
            f"{failed} AWS limits how often one volume can be modified. Wait as long as the message says, "
            "then run apply again; the plan will show the same change.",
        )
    if code == "IdempotentParameterMismatch":
        return ProviderError(
            "Idempotency token reused",
            f"{failed} AWS already used this token for a create with other parameters. Run plan and apply "
            "again: a new apply makes a new token.",
        )
    if code in THROTTLING_CODES:
        return ProviderError(
            "AWS kept throttling requests",
            f"{failed} Every one of {attempts} attempts was throttled. Wait a few minutes, lower -parallelism, "
            "or raise max_attempts under providers.aws in volplan.yml.",
        )
    if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
        return ProviderError(
            "Not authorized",
            f"{failed} Allow ec2:{operation} for the IAM identity of the AWS SDK's credentials (decode the "
            "message with aws sts decode-authorization-message), then run the command again.",
        )
    if code in EXPIRED_CREDENTIAL_CODES:
        return ProviderError(
            "AWS credentials expired or invalid",
            f"{failed} Refresh the credentials (for example with aws sso login, or new session credentials "
            "in the environment), then run the command again.",
        )
    if code in INVALID_REQUEST_CODES:
        return ProviderError(
            "Invalid request to AWS",
            f"{failed} Check the volume's size, availability_zone and tags in its configuration, and "
            "volume_type under providers.aws in volplan.yml.",
        )
    return ProviderError("AWS request failed", f"{failed} Fix the cause AWS reports, then run the command again.")


def translate_sdk_error(error: BotoCoreError, operation: str, subject: str, region: str) -> ProviderError:
    """Turn an error raised inside botocore (no AWS response) into a ProviderError."""
    failed = f"{operation} for {subject} in {region} failed: {error}."
    if isinstance(error, NoCredentialsError):
        return ProviderError(
            "AWS credentials missing",
            f"{failed} Configure credentials the AWS SDK finds: a profile (AWS_PROFILE), the environment "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or an instance role.",
        )
    if isinstance(error, NoRegionError):
        return ProviderError("AWS region missing", f"{failed} Add region: to the volume's configuration.")
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return ProviderError(
            "AWS endpoint unreachable",
            f"{failed} Check the network and any AWS_ENDPOINT_URL setting, then run the command again.",
        )
    return ProviderError("AWS SDK error", f"{failed} Run the command again with -vv to see the SDK's log.")
