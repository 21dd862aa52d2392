fn main() {
    println!("demo: coming with the shutdown sequence");
}
