mkdir -p /tmp/l && tar -xJf .gpu-libs.tar.xz -C /tmp/l; export LD_LIBRARY_PATH=/tmp/l:/usr/local/cuda/lib64
b=build/release/bin/ssm
$b bench --write-model mamba2-130m --dtype bf16 --out /tmp/m >/dev/null
echo "== long prompt"; $b generate --model /tmp/m --device cuda --prompt "$(head -c 600 README.md)" --max-new-tokens 8 --ignore-eos --temperature 0 2>&1 | tail -2
echo "== blocking bench"; CUDA_LAUNCH_BLOCKING=1 $b bench --device cuda --models mamba2-130m --decode-tokens 4 2>&1 | tail -2
echo "== sanitizer bench"; /usr/local/cuda/bin/compute-sanitizer --print-limit 5 $b bench --device cuda --models mamba2-130m --decode-tokens 4 2>&1 | tail -40
echo "== sanitizer long"; /usr/local/cuda/bin/compute-sanitizer --print-limit 5 $b generate --model /tmp/m --device cuda --prompt "$(head -c 600 README.md)" --max-new-tokens 4 --ignore-eos --temperature 0 2>&1 | tail -30
