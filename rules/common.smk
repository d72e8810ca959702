# Helpers shared by the rules: paths and the list of final outputs.

from pathlib import Path


def resources_dir():
    """Where downloads and simulations go."""
    return Path(config["resources"])


def demo_dir():
    """Directory of the simulated demo data set."""
    return resources_dir() / config["demo"]["preset"]


def final_outputs():
    """Targets of rule all for the configured inputs."""
    if config["inputs"] == "demo":
        return [demo_dir() / "truth" / "exposures.ecsv"]
    return []


def summary_message():
    """The message printed when a run succeeds."""
    if config["inputs"] == "demo":
        return (
            f"mvmflow: demo data set simulated in {demo_dir()} "
            f"(exposures, truth/ and the reference catalogue truth/refcat.ecsv)"
        )
    return "mvmflow: done"
