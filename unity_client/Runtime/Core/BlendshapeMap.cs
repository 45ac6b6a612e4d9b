// Which rig control drives which blend shape of a mesh, and how its value becomes a weight.
using System;
using System.Collections.Generic;

namespace FreeAvatar
{
    /// <summary>One row of a BlendshapeDriver's table (serialised by Unity, edited in the inspector).</summary>
    [Serializable]
    public sealed class BlendshapeBinding
    {
        /// <summary>A control of the rig, by its name or its ARKit alias (any spelling).</summary>
        public string control = "";
        /// <summary>A blend shape of the mesh, by name.</summary>
        public string blendshape = "";
        /// <summary>weight = value * scale + offset: 100 takes a 0..1 control to Unity's 0..100.</summary>
        public float scale = 100f;
        public float offset = 0f;

        public BlendshapeBinding() { }

        public BlendshapeBinding(string control, string blendshape)
        {
            this.control = control;
            this.blendshape = blendshape;
        }
    }

    /// <summary>A driver's table resolved against one avatar's controls and one mesh: index
    /// arrays, so that applying a frame is a loop with no lookups.</summary>
    public sealed class BlendshapeMap
    {
        public readonly int[] Controls;     // index into a frame's values
        public readonly int[] Blendshapes;  // index into the mesh's blend shapes
        public readonly float[] Scales;
        public readonly float[] Offsets;
        /// <summary>Rows that matched no control or no blend shape, to show in the inspector.</summary>
        public readonly List<string> Unmatched = new List<string>();

        public int Count { get { return Controls.Length; } }

        public BlendshapeMap(IList<BlendshapeBinding> rows, AvatarControls controls, IList<string> blendshapes)
        {
            var control = new List<int>();
            var shape = new List<int>();
            var scale = new List<float>();
            var offset = new List<float>();
            foreach (var row in rows)
            {
                int c = FindControl(controls, row.control);
                int b = IndexOf(blendshapes, row.blendshape);
                if (c < 0 || b < 0)
                {
                    Unmatched.Add(c < 0 ? "no control '" + row.control + "'" : "no blend shape '" + row.blendshape + "'");
                    continue;
                }
                control.Add(c);
                shape.Add(b);
                scale.Add(row.scale);
                offset.Add(row.offset);
            }
            Controls = control.ToArray();
            Blendshapes = shape.ToArray();
            Scales = scale.ToArray();
            Offsets = offset.ToArray();
        }

        /// <summary>Unity weights for one frame's values: weights[i] goes to blend shape Blendshapes[i].</summary>
        public void Weights(float[] values, float[] weights)
        {
            for (int i = 0; i < Controls.Length; i++)
            {
                int c = Controls[i];
                weights[i] = c < values.Length ? values[c] * Scales[i] + Offsets[i] : Offsets[i];
            }
        }

        /// <summary>Rows for the blend shapes a table lacks, matched by name: a blend shape named
        /// as a control, or spelling the ARKit shape a control is aliased to (eyeBlink_L for
        /// eyeBlinkLeft). Without controls (before the stream has named them), the blend shapes
        /// that spell ARKit names get rows keyed by that name, which ARKit-aliased rigs match.</summary>
        public static List<BlendshapeBinding> AutoFill(
            IList<BlendshapeBinding> existing, AvatarControls controls, IList<string> blendshapes)
        {
            var taken = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
            foreach (var row in existing) taken.Add(row.blendshape);
            var added = new List<BlendshapeBinding>();
            foreach (var shape in blendshapes)
            {
                if (taken.Contains(shape)) continue;
                string control = controls == null ? ArkitNames.Canonical(shape) : NameOf(controls, FindControl(controls, Unprefixed(shape)));
                if (control.Length == 0) continue;
                added.Add(new BlendshapeBinding(control, shape));
                taken.Add(shape);
            }
            return added;
        }

        /// <summary>A control by name (case-insensitive), else by the ARKit shape it stands for.</summary>
        static int FindControl(AvatarControls controls, string reference)
        {
            if (controls == null || string.IsNullOrEmpty(reference)) return -1;
            for (int i = 0; i < controls.ControlNames.Length; i++)
            {
                if (string.Equals(controls.ControlNames[i], reference, StringComparison.OrdinalIgnoreCase)) return i;
            }
            string arkit = ArkitNames.Canonical(reference);
            if (arkit.Length == 0) return -1;
            for (int i = 0; i < controls.ControlNames.Length; i++)
            {
                if (Alias(controls, i) == arkit || ArkitNames.Canonical(controls.ControlNames[i]) == arkit) return i;
            }
            return -1;
        }

        static string NameOf(AvatarControls controls, int i)
        {
            return i < 0 ? "" : controls.ControlNames[i];
        }

        static string Alias(AvatarControls controls, int i)
        {
            return i < controls.ArkitAliases.Length ? controls.ArkitAliases[i] : "";
        }

        static int IndexOf(IList<string> names, string name)
        {
            for (int i = 0; i < names.Count; i++)
            {
                if (string.Equals(names[i], name, StringComparison.Ordinal)) return i;
            }
            return -1;
        }

        /// <summary>A mesh's blend shape name without the exporter's prefix (blendShape1.jawOpen).</summary>
        static string Unprefixed(string name)
        {
            int cut = Math.Max(name.LastIndexOf('.'), name.LastIndexOf(':'));
            return name.Substring(cut + 1);
        }
    }
}
