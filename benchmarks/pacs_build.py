"""Building from a PACS: studies per minute from Orthanc over DICOMweb on loopback, beside a DICOM-folder
build of the very same files, in one run.

`--studies` CT studies of `--slices` real CT slices each (pydicom's CT_small.dcm, 128x128) go to a
fresh Orthanc with its DICOMweb plugin, and the same datasets to a folder. Then, each a fresh
`kgreport` process (models loaded in both, findings off): `index build dicomweb+http://...` (QIDO,
WADO-RS, de-identify, cache, embed), `index build FOLDER --format dicom`, and `index sync` with nothing
new. Printed and written: seconds, studies per minute, and the PACS build's time over the folder's.

Usage: python -m kgreport.benchmarks.pacs_build [--studies 20] [--slices 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.testkit.pacs import make_ct_study, running_orthanc


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kgreport.api.cli", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout[done.stdout.index("{") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "pacs_build.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "KGREPORT_DATA_DIR": str(root / "data"), "NO_PROXY": "127.0.0.1,localhost"}
        folder = root / "folder"
        studies = [
            make_ct_study(
                slices=args.slices,
                study_date=f"2024{1 + n // 28:02d}{1 + n % 28:02d}",
                accession_number=f"ACC{n:04d}",
                patient_id=f"P{n % 7}",
            )  # fmt: skip
            for n in range(args.studies)
        ]
        reports = []
        for n, datasets in enumerate(studies):
            target = folder / f"study{n:04d}"
            target.mkdir(parents=True)
            for i, ds in enumerate(datasets):
                ds.save_as(target / f"{i:04d}.dcm")
            reports.append({"case_id": datasets[0].StudyInstanceUID, "report": f"Findings: study {n}."})
        (folder / "reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reports))

        with running_orthanc(root / "orthanc") as orthanc:
            for datasets in studies:
                orthanc.upload_all(datasets)
            reports_arg = ["--reports", str(folder)]
            pacs_s, pacs_result = _timed(["index", "build", orthanc.dicomweb_url, "--name", "pacs", "--no-findings",
                                          *reports_arg], env)  # fmt: skip
            folder_s, folder_result = _timed(["index", "build", str(folder), "--name", "folder", "--format",
                                              "dicom", "--no-findings"], env)  # fmt: skip
            sync_s, sync_result = _timed(["index", "sync", "pacs", "--no-findings"], env)

    per_minute = lambda seconds: round(args.studies * 60 / seconds, 1)  # noqa: E731
    result = {
        "studies": args.studies,
        "slices_per_study": args.slices,
        "pacs_build": {"seconds": round(pacs_s, 1), "studies_per_minute": per_minute(pacs_s),
                       "cases_added": pacs_result["cases_added"]},
        "folder_build": {"seconds": round(folder_s, 1), "studies_per_minute": per_minute(folder_s),
                         "cases_added": folder_result["cases_added"]},
        "sync_nothing_new": {"seconds": round(sync_s, 1), "cases_added": sync_result["cases_added"]},
        "pacs_over_folder_time": round(pacs_s / folder_s, 2),
        "note": "each build a fresh process: model loading (a few seconds) is in both times",
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
