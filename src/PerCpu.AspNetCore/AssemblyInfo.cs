// The middleware, exposition and meter bridge arrive with the AspNetCore issue; the project exists from the
// foundation on so that the solution layout, the public API files and the AOT analysis are in place.
[assembly: System.CLSCompliant(false)]
