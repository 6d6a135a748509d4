struct Service;

impl Service {
    #[cachelet_macros::read("get_user")]
    async fn get_user(&self, user_id: u64) -> Result<u64, String> {
        Ok(user_id)
    }
}

fn main() {}
