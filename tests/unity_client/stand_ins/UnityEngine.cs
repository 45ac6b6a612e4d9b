// Compile-only stand-ins for the UnityEngine API that unity_client's scripts use, with Unity's
// own names and signatures, so that those scripts are type-checked here, where Unity is not.
// Nothing here runs; keep it to what the scripts call.
using System;

namespace UnityEngine
{
    public class Object
    {
        public string name;

        public static T FindObjectOfType<T>() where T : Object { throw new NotImplementedException(); }
    }

    public class Component : Object
    {
        public GameObject gameObject { get { throw new NotImplementedException(); } }

        public T GetComponent<T>() { throw new NotImplementedException(); }
    }

    public class Behaviour : Component
    {
        public bool enabled { get; set; }
    }

    public class MonoBehaviour : Behaviour { }

    public sealed class GameObject : Object
    {
        public T AddComponent<T>() where T : Component { throw new NotImplementedException(); }
    }

    public class Renderer : Component { }

    public class SkinnedMeshRenderer : Renderer
    {
        public Mesh sharedMesh { get; set; }

        public void SetBlendShapeWeight(int index, float value) { throw new NotImplementedException(); }
    }

    public sealed class Mesh : Object
    {
        public int blendShapeCount { get { throw new NotImplementedException(); } }

        public string GetBlendShapeName(int shapeIndex) { throw new NotImplementedException(); }
    }

    public static class Debug
    {
        public static void LogWarning(object message) { }

        public static void LogWarning(object message, Object context) { }
    }

    public struct Rect
    {
        public Rect(float x, float y, float width, float height) { }
    }

    public class GUI
    {
        public static void Label(Rect position, string text) { }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class AddComponentMenu : Attribute
    {
        public AddComponentMenu(string menuName) { }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class DisallowMultipleComponent : Attribute { }

    [AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
    public sealed class ContextMenu : Attribute
    {
        public ContextMenu(string itemName) { }
    }

    public abstract class PropertyAttribute : Attribute { }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TooltipAttribute : PropertyAttribute
    {
        public TooltipAttribute(string tooltip) { }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class RangeAttribute : PropertyAttribute
    {
        public RangeAttribute(float min, float max) { }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TextAreaAttribute : PropertyAttribute { }
}
