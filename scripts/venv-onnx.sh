# Sourced by the ONNX scripts: makes .venv-onnx (onnx, onnxruntime, gymnasium,
# numpy at pinned versions) if it is missing, and sets $venv to it.
venv=.venv-onnx
if ! "$venv/bin/python" -c "import onnx, onnxruntime, gymnasium" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    onnx==1.23.2 onnxruntime==1.31.1 gymnasium==1.4.0 numpy==2.4.6
fi
