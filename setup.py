"""recbatch: Spark batch refresh of directed-graph recommendations and their thresholds.

The pins below are one set verified to work together in a single environment, which is a
hard requirement: torch training runs inside Spark executors, so the driver, executors,
Petastorm readers and torch workers share one interpreter (see lib/install.sh).
"""

from setuptools import find_packages, setup

RUNTIME_PINS = [
    # Spark 4.0.x: Spark 4.1+ needs pyarrow >= 15 for Arrow/pandas UDFs, which petastorm cannot use.
    "pyspark==4.0.1",
    # Delta Lake built for Spark 4.0; its JVM side is io.delta:delta-spark_2.13 of the same
    # version (lib/jvm/pom.xml).
    "delta-spark==4.0.1",
    # GraphFrames for Spark 4; its JVM side is io.graphframes:graphframes-spark4_2.13 of the same
    # version (lib/jvm/pom.xml).
    "graphframes-py==0.11.0",
    # petastorm 0.13.1 calls pyarrow.filesystem and the legacy ParquetDataset, both removed in
    # pyarrow 15, and it is built for numpy 1.x.
    "pyarrow==14.0.2",
    "numpy==1.26.4",
    "pandas==2.2.3",
    # petastorm 0.13.1 pins setuptools<70. torch 2.9.1 requires setuptools only on Python >= 3.12
    # (where it wants a newer one), so on the Python 3.11 we target the two resolve together;
    # newer torch (2.10+) requires setuptools>=77 on every Python and would conflict.
    "petastorm==0.13.1",
    "torch==2.9.1",
    # Config: YAML files validated by pydantic (unknown keys are errors).
    "pyyaml==6.0.3",
    "pydantic==2.12.4",
    # Thresholds (recbatch.thresholds): Clopper-Pearson bounds (scipy.stats.beta), isotonic
    # calibration (sklearn.isotonic), reliability plots of bench/thresholds_eval.py. Verified to
    # install beside numpy 1.26.4 / pandas 2.2.3 on Python 3.11 without moving any other pin.
    "scipy==1.14.1",
    "scikit-learn==1.5.2",
    "matplotlib==3.9.2",
    # Approximate top-K (recommendations.search = ivf): faiss' IVF index. Its abi3 wheel needs
    # numpy >= 1.25 and moves no other pin.
    "faiss-cpu==1.13.2",
]

DEV_PINS = [
    "pytest==8.4.2",
    "pytest-timeout==2.4.0",
    "ruff==0.14.5",
]

setup(
    name="recbatch",
    version="0.1.0",
    description="Spark batch refresh of directed-graph recommendations and uncertainty-aware thresholds",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    python_requires=">=3.11,<3.12",
    install_requires=RUNTIME_PINS,
    extras_require={"dev": DEV_PINS},
)
