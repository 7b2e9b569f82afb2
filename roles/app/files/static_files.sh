#!/bin/sh
# static_files.sh IMAGE DIR RELEASE KEEP: copy the static files of an app image (where /opt/deploykit/static.json
# says) to DIR/releases/RELEASE-IMAGEID/URL, point DIR/current at them and DIR/previous at the ones before, keep
# KEEP releases. By image id: two images of one release (another app's, a rebuild) are not the same files.
# Prints "url URL" (nothing when the image has no static files) and "changed" when it changed anything.
# Run by roles/app/tasks/static.yml.
set -eu
image=$1 dir=$2 keep=$4
release=$3-$(docker image inspect --format '{{.Id}}' "$image" | sed 's/^sha256://' | cut -c1-12)
if [ -f "$dir/releases/$release/.url" ]; then  # copied by an earlier deploy of this build: nothing to read
    url=$(cat "$dir/releases/$release/.url")
else
    container=$(docker create --network none "$image" true)
    trap 'docker rm -f "$container" >/dev/null' EXIT
    info=$(docker cp "$container:/opt/deploykit/static.json" - 2>/dev/null | tar -xO 2>/dev/null || true)
    url=$(printf '%s' "$info" | python3 -c 'import json, sys; print(json.loads(sys.stdin.read() or "{}").get("url", ""))')
    root=$(printf '%s' "$info" | python3 -c 'import json, sys; print(json.loads(sys.stdin.read() or "{}").get("root", ""))')
    [ -n "$url" ] && [ -n "$root" ] || exit 0
fi
echo "url $url"
mkdir -p "$dir/releases"
if [ ! -d "$dir/releases/$release" ]; then
    partial="$dir/releases/.$release.partial"
    rm -rf "$partial"
    mkdir -p "$partial$url"
    docker cp "$container:$root/." "$partial$url"
    printf '%s\n' "$url" > "$partial/.url"
    chmod -R a+rX "$partial"
    mv "$partial" "$dir/releases/$release"
    echo changed
fi
current=$(readlink "$dir/current" 2>/dev/null || true)
if [ "$current" != "releases/$release" ]; then
    [ -n "$current" ] && ln -sfn "$current" "$dir/.previous" && mv -T "$dir/.previous" "$dir/previous"
    ln -sfn "releases/$release" "$dir/.current" && mv -T "$dir/.current" "$dir/current"
    echo changed
fi
# keep the KEEP newest releases, and whatever current and previous point at
ls -1t "$dir/releases" | tail -n "+$((keep + 1))" | while read -r old; do
    case "releases/$old" in "$(readlink "$dir/current")"|"$(readlink "$dir/previous" 2>/dev/null)") ;; *) rm -rf "$dir/releases/$old" ;; esac
done
