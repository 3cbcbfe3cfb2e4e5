"""Convert HAM10000 (as downloaded from the Harvard Dataverse) into a skinsynth dataset with leak-free splits.

    python dataset_scripts/ham10000.py ~/data/HAM10000 --out ./ham10000 [--max-size 512] [skinsynth prepare options]

The same as `skinsynth prepare SOURCE --format ham10000 …`: HAM10000_metadata.csv (or metadata.csv) beside the
image folders (HAM10000_images_part_1/ and _part_2/, or images/). Labels: melanocytic_nevus, melanoma,
benign_keratosis, basal_cell_carcinoma, actinic_keratosis, vascular_lesion, dermatofibroma (`dx` keeps the code);
attributes body_site, sex, age; group_id = lesion_id. License CC BY-NC-SA 4.0; cite Tschandl et al. 2018.
"""

import sys

from skinsynth.cli import main

if __name__ == "__main__":
    quiet = [a for a in sys.argv[1:] if a in ("-q", "--quiet")]  # a flag of `skinsynth` itself, before the command
    sys.exit(main([*quiet, "prepare", *(a for a in sys.argv[1:] if a not in quiet), "--format", "ham10000"]))
