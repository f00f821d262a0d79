#!/usr/bin/env bash
# Create or reuse the project virtual environment at .venv and install the package into it.
#
# - CPU PyTorch 2.13.0 is installed first and pinned, so nothing pulls a multi-GB CUDA build.
# - When a ROS 2 install is sourced (ROS_DISTRO set and rclpy importable by the system Python),
#   the venv sees it (--system-site-packages); otherwise the ROS 2 PyPI wheels are installed.
# - Re-runs are cheap: a stamp of setup.py and this script skips pip when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
torch_version="${RAINMAMBA_TORCH_VERSION:-2.13.0}"

have_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$py" -c 'import rclpy' >/dev/null 2>&1; then
  have_ros=1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment at $venv"
  if [ "$have_ros" = 1 ]; then
    "$py" -m venv --system-site-packages "$venv"
  else
    "$py" -m venv "$venv"
  fi
fi

extras="test,onnx"
[ "$have_ros" = 1 ] || extras="$extras,ros-wheels"
stamp="$venv/.rainmamba-setup-stamp"
want="$(cat "$root/setup.py" "$root/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1) $extras $torch_version"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] environment up to date ($venv)"
  exit 0
fi

pip_q=(-q --disable-pip-version-check)
echo "[setup] installing torch==$torch_version (CPU build where available)"
"$venv/bin/python" -m pip install "${pip_q[@]}" "torch==$torch_version"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" > "$constraints"
echo "[setup] installing rainmamba_ros[$extras] (editable)"
"$venv/bin/python" -m pip install "${pip_q[@]}" -c "$constraints" -e "$root[$extras]"
echo "$want" > "$stamp"
echo "[setup] done"
