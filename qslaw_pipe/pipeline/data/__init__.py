"""Samples the stages train and score on.

sample.py      Sample: prompt, image, target, choices, meta
records.py     multiple-choice prompts from question records
sets.py        --data resolved to samples (easyvqa, easyvqa-captions, a ScienceQA dir, LLaVA JSON)
easyvqa.py     easy-VQA as multiple choice
captions.py    image-caption pairs from easy-VQA's labels (stage-1 alignment)
scienceqa.py   ScienceQA in its official layout
llava_json.py  LLaVA conversation JSON (image paths confined to the image folder)
images.py      one open_image, and the check that every image opens
text.py        a text corpus cut in halves and tokenised into chunks
"""
