"""The synthetic world: procedural actors, built-in avatars, FEC-style triplets and test videos.

Nothing here downloads data; everything is rendered from seeds, so tests, benchmarks and
training runs are reproducible on a CPU-only machine. One module per concept:

* ``actors``   -- action units, expression sampling, identities, pose/light/nuisance;
                  ``render_faces`` (crops) and ``render_frames`` (camera frames) -> FaceBatch
* ``face``     -- the vectorised 2.5D face painter both actors and the ARKit avatar use
* ``avatars``  -- ``BUILTIN_AVATARS``: rig specs, engine stand-in renderers, and the
                  evaluation-only ``expected_rig`` retarget (never for training)
* ``triplets`` -- FEC-style comparison triplets; FEC CSV read/write; export to PNGs + CSV
* ``video``    -- smooth trajectories rendered to mp4 with per-frame JSON ground truth
* ``sheet``    -- the contact sheet (docs/synthetic.png)
* ``cli``      -- ``freeavatar synth video | sheet | triplets``

Modules import torch lazily from here: importing this package is cheap (the CLI relies on it).
Rendering is fastest with one torch thread per process (``torch.set_num_threads(1)``).
"""
