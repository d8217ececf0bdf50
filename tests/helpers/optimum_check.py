"""Run in a virtual environment with optimum-onnx (transformers < 4.58): greedy tokens of an exported
text/ model through optimum's ORTModelForCausalLM. Prints JSON {"tokens": [...]}.

    python -m qslaw_pipe.exports.optimum_check TEXT_DIR PROMPT_IDS_JSON MAX_NEW_TOKENS
(kept free of qslaw_pipe imports, so it runs under the other transformers version)
"""

import json
import sys


def main() -> None:
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    text_dir, ids, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    model = ORTModelForCausalLM.from_pretrained(text_dir, use_cache=True, use_io_binding=False)
    input_ids = torch.tensor([ids])
    out = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    print(json.dumps({"tokens": out[0, len(ids) :].tolist()}))


if __name__ == "__main__":
    main()
