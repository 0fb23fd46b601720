python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/tmp/site:$PWD
mkdir -p /etc/OpenCL/vendors && echo /usr/local/nvidia/lib64/libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd
export ENGINE_CACHE_DIR=/tmp/ec POCL_CACHE_DIR=/tmp/pc ENGINE_DEVICE=nvidia
timeout 60 python3 -m pytest -q -x -p no:cacheprovider tests/test_node_kernels.py tests/cluster/test_transport_training.py -k "bfloat16 or streams" 2>&1 | tail -1
timeout 100 python3 -m bench.scaling --models 1 --workers 2 --steps 40 --warmup 5 --systems engine --variant "f32=" --variant "bf16=transport=bfloat16" 2>&1 | grep -E "^\| MLP" | head -4
