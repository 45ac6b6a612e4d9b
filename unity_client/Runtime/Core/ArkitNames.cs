// ARKit's 52 face blendshape names, and the one place that reads the ways tools write them.
using System;
using System.Collections.Generic;

namespace FreeAvatar
{
    public static class ArkitNames
    {
        /// <summary>In Unreal's EARFaceBlendShape order, as Live Link Face sends them.</summary>
        public static readonly string[] Shapes =
        {
            "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
            "eyeSquintLeft", "eyeWideLeft",
            "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
            "eyeSquintRight", "eyeWideRight",
            "jawForward", "jawLeft", "jawRight", "jawOpen",
            "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
            "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
            "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
            "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
            "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
            "mouthUpperUpLeft", "mouthUpperUpRight",
            "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
            "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
            "noseSneerLeft", "noseSneerRight",
            "tongueOut",
        };

        static readonly Dictionary<string, string> ByKey = MakeKeys();

        static Dictionary<string, string> MakeKeys()
        {
            var keys = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var shape in Shapes) keys[shape.ToLowerInvariant()] = shape;
            return keys;
        }

        /// <summary>ARKit's spelling of a name as some tool writes it (eyeBlink_L, EyeBlinkLeft,
        /// eye_blink_left, Face.eyeBlinkL, blendShape1.eyeBlinkLeft), or "" if it is not one of
        /// the 52. The twin of freeavatar.arkit.canonical_arkit_name; a test holds them equal.</summary>
        public static string Canonical(string name)
        {
            if (string.IsNullOrEmpty(name)) return "";
            int cut = Math.Max(name.LastIndexOf('.'), name.LastIndexOf(':'));
            var key = new System.Text.StringBuilder(name.Length);
            for (int i = cut + 1; i < name.Length; i++)
            {
                char c = name[i];
                if (c != '_' && c != '-' && c != ' ') key.Append(char.ToLowerInvariant(c));
            }
            string found;
            if (ByKey.TryGetValue(key.ToString(), out found)) return found;
            // A one-letter side suffix, tried only after an exact match: mouthRollUpper ends in r.
            if (key.Length == 0) return "";
            char last = key[key.Length - 1];
            if (last != 'l' && last != 'r') return "";
            key.Length -= 1;
            key.Append(last == 'l' ? "left" : "right");
            return ByKey.TryGetValue(key.ToString(), out found) ? found : "";
        }

        /// <summary>The VRM "perfect sync" clip name of an ARKit shape: EyeBlinkLeft.</summary>
        public static string PerfectSync(string shape)
        {
            return string.IsNullOrEmpty(shape) ? "" : char.ToUpperInvariant(shape[0]) + shape.Substring(1);
        }
    }
}
