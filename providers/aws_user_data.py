"""The user data of run nodes on AWS: a boot script that mounts the volumes volplan attaches.

volplan starts an instance before it attaches any volume, so the script cannot list the
volumes at boot. Instead it installs a systemd service that, every few seconds, reads the
instance's `volplan:mount:<device>` tags from the instance metadata service (RunInstances
enables tags in instance metadata) and acts on each tag:

    volplan:mount:sdf = "<volume id> <format|keep> <mount path>"

- it waits for the device to appear (on Nitro instances, /dev/sdf shows up as an NVMe device
  whose serial is the volume id; on Xen instances, as /dev/xvdf);
- with `format`, which volplan writes only for volumes it created, it makes an ext4 file system
  when `blkid -p` finds no signature on the device; a registered volume is never formatted;
- it mounts the device at the path.

volplan deletes the tag before it detaches the volume, and the script then unmounts the path,
so that a detach that is not forced finds the file system released.
"""

from __future__ import annotations

MOUNT_TAG_PREFIX = "volplan:mount:"
FORMAT = "format"
KEEP = "keep"

# The script that the service runs on each pass. The environment variables exist so that
# tests can run it with stand-in commands and folders; an instance uses the defaults.
MOUNT_SCRIPT = r"""#!/bin/bash
# Mount the EBS volumes that volplan attached to this instance; unmount those it is detaching.
set -u
IMDS=${VOLPLAN_IMDS:-http://169.254.169.254}
DEVICES=${VOLPLAN_DEVICES:-/dev}
STATE=${VOLPLAN_STATE:-/run/volplan}
PREFIX=volplan:mount:
mkdir -p "$STATE"

token=$(curl -sf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$IMDS/latest/api/token") || exit 0
metadata() {
    curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/meta-data/$1"
}

# Print the device node of volume $2, attached as device name $1 (such as /dev/sdf).
find_device() {
    local name=$1 volume=$2 candidate
    for candidate in "$DEVICES/disk/by-id/nvme-Amazon_Elastic_Block_Store_${volume/-/}" \
        "$DEVICES/${name#/dev/}" "$DEVICES/xvd${name#/dev/sd}"; do
        if [ -e "$candidate" ]; then
            readlink -f "$candidate"
            return 0
        fi
    done
    return 1
}

mount_volume() {
    local name=$1 volume=$2 mode=$3 path=$4 device status
    if ! device=$(find_device "$name" "$volume"); then
        echo "volplan: waiting for $volume ($name)"
        return 0
    fi
    if mountpoint -q "$path"; then
        return 0
    fi
    if [ "$mode" = format ]; then
        # blkid -p exits with 2 when the device carries no file system or partition table.
        blkid -p "$device" >/dev/null 2>&1
        status=$?
        if [ "$status" -eq 2 ]; then
            echo "volplan: making an ext4 file system on $device ($volume)"
            mkfs.ext4 -q "$device" || return 1
        elif [ "$status" -ne 0 ]; then
            echo "volplan: blkid failed on $device ($volume) with status $status; not mounting it"
            return 1
        fi
    fi
    mkdir -p "$path" && mount "$device" "$path" && printf '%s\n' "$path" >"$STATE/$volume"
    echo "volplan: mounted $volume at $path"
}

wanted=" "
for key in $(metadata tags/instance/); do
    case "$key" in
    "$PREFIX"*) ;;
    *) continue ;;
    esac
    read -r volume mode path <<<"$(metadata "tags/instance/$key")"
    wanted="$wanted$volume "
    mount_volume "/dev/${key#"$PREFIX"}" "$volume" "$mode" "$path"
done

# A volume whose tag is gone is being detached: release its file system.
for record in "$STATE"/vol-*; do
    [ -e "$record" ] || continue
    volume=${record##*/}
    case "$wanted" in
    *" $volume "*) continue ;;
    esac
    path=$(cat "$record")
    if ! mountpoint -q "$path" || umount "$path"; then
        rm -f "$record"
        echo "volplan: unmounted $volume from $path"
    fi
done
"""

_SERVICE = """[Unit]
Description=Mount the EBS volumes that volplan attaches
After=network-online.target

[Service]
ExecStart=/bin/bash -c 'while true; do /usr/local/sbin/volplan-mounts; sleep 5; done'
Restart=always

[Install]
WantedBy=multi-user.target
"""


def user_data() -> str:
    """Return the boot script that installs and starts the mount service."""
    return (
        "#!/bin/bash\n"
        "# Installed by volplan: mounts the EBS volumes that volplan attaches to this instance.\n"
        "set -eu\n"
        "cat >/usr/local/sbin/volplan-mounts <<'VOLPLAN_SCRIPT'\n"
        f"{MOUNT_SCRIPT}"
        "VOLPLAN_SCRIPT\n"
        "chmod 0755 /usr/local/sbin/volplan-mounts\n"
        "cat >/etc/systemd/system/volplan-mounts.service <<'VOLPLAN_SERVICE'\n"
        f"{_SERVICE}"
        "VOLPLAN_SERVICE\n"
        "systemctl daemon-reload\n"
        "systemctl enable --now volplan-mounts.service\n"
    )


def mount_tag(device: str, volume_id: str, format_if_empty: bool, path: str) -> dict[str, str]:
    """Return the instance tag that instructs the mount service what to do with `device`."""
    mode = FORMAT if format_if_empty else KEEP
    return {"Key": MOUNT_TAG_PREFIX + device.removeprefix("/dev/"), "Value": f"{volume_id} {mode} {path}"}


def parse_mount_tag(key: str, value: str) -> tuple[str, str, str] | None:
    """Return (device, volume id, path) from a mount tag, or None for any other tag."""
    if not key.startswith(MOUNT_TAG_PREFIX):
        return None
    parts = value.split(" ", 2)
    if len(parts) != 3:
        return None
    volume_id, _, path = parts
    return "/dev/" + key.removeprefix(MOUNT_TAG_PREFIX), volume_id, path
